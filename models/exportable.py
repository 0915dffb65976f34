"""What every model does for export (`python -m scripts.tools.export`) and for test.py's `--backend`.

Each model describes its own test-time graph, `export_graph()` (a util.export.graph_spec.GraphSpec: module,
inputs, outputs, the size rule from `size_rule()`), and the translator with that graph run by a runtime,
`graph_translator(run)` (ATME draws its map, SEGAN runs its codes). The generic parts (exporter, parity check,
graph checks, runtimes, the `auto` choice) are in util/export/, entered from here with plain data: they never
call back into a model.
"""
import logging

from util.command_line import commands
from util.export import onnx_export, runtime_choice
from util.export.graph_spec import mode_dependent_layers

log = logging.getLogger(__name__)


class ExportableModel:
    """Mixed into BaseModel. A model family implements `export_graph()` and `graph_translator(run)`."""

    def export_graph(self):
        """The GraphSpec of this model's test-time network, with its weights."""
        raise NotImplementedError(f"{type(self).__name__} has no export_graph(), so it cannot be exported or run on "
                                  f"another --backend than torch; see models/exportable.py")

    def graph_translator(self, run):
        """The translator (see `translator()`) with the graph of `export_graph()` run by `run` ({input name:
        tensor} -> {output name: tensor}): padding, tiling and the visuals stay the torch path's."""
        raise NotImplementedError(f"{type(self).__name__} has no graph_translator(run); see models/exportable.py")

    def checkpoint_files(self, tag):
        """The network files `setup()` loads for checkpoint `tag` (the ones an export is made from)."""
        files = []
        for name, _ in self.networks():
            path = self._find_network_file(tag, name)
            if path is None:
                raise FileNotFoundError(f"no checkpoint of network {name} for '{tag}' in {self.save_dir}")
            files.append(self._readable(path))
        return files

    def export_command(self, tag):
        """The command that exports checkpoint `tag` of this run."""
        return commands.export_command(self.opt.name, self.opt.checkpoints_dir, tag)

    def export(self, tag, export_size, tolerance=onnx_export.DEFAULT_TOLERANCE, opset=None):
        """Write `<tag>_test_graph.onnx` and `.json` into the run folder (util.export.onnx_export.export_graph);
        returns (ONNX path, JSON path, the JSON's payload)."""
        spec = self.export_graph()
        metadata = {"model": self.opt.model, "checkpoint": tag, "mode": "eval",
                    "mode_dependent_layers": mode_dependent_layers(spec.module),
                    "options": {k: getattr(self.opt, k) for k in self.architecture_flags if hasattr(self.opt, k)},
                    "export_command": self.export_command(tag)}
        return onnx_export.export_graph(spec, self.save_dir, tag, metadata, sources=self.checkpoint_files(tag),
                                        tolerance=tolerance, export_size=export_size, opset=opset)

    def _checked_export(self, tag, spec):
        """The path of checkpoint `tag`'s export, checked (util.export.onnx_export.load_export); refused when the
        networks are in train mode but hold layers that act differently there (the graph is the eval network)."""
        changing = mode_dependent_layers(spec.module, in_train_mode=True)
        if changing:
            raise ValueError(f"the generator has {', '.join(changing)} layers, which act differently in train mode, "
                             f"and the exported graph is the eval-mode network; add --eval to compare like with "
                             f"like, or use --backend torch")
        return onnx_export.load_export(self.save_dir, tag, self.checkpoint_files(tag), self.export_command(tag))[0]

    def open_runtime(self, tag, backend, precision="fp32"):
        """The runner ({input: tensor} -> {output: tensor}) of `backend` for checkpoint `tag`'s checked export."""
        path = self._checked_export(tag, self.export_graph())
        return onnx_export.open_graph(path, backend, precision, self.export_command(tag))

    def open_backend(self, tag, backend, precision="fp32", side=256):
        """Make test() run on `backend` (util.export.backends; `auto`: the fastest fp32 one, timed on one `side` x
        `side` image): sets `runtime_translator` (None for torch). Returns the backend's name."""
        self.runtime_translator = None
        if backend == "torch":
            return backend
        spec = self.export_graph()
        path = self._checked_export(tag, spec)
        name, run = runtime_choice.open_backend(path, backend, precision, self.export_command(tag), spec, side,
                                                self.device)
        if run is not None:
            self.runtime_translator = self.graph_translator(run)
        return name
