"""The test-time network of each model family as one exportable module, and the test step that runs it.

`graph_spec(model)` describes what an exported file of `model`'s generator holds: the module (eval mode, the
arithmetic of the model's `test()`), its inputs and outputs with their layouts and value ranges, the multiple
the image sides must be padded to, and example inputs. With the network run by `run` (a callable {input name:
tensor} -> {output name: tensor}, e.g. an ONNX Runtime session), `runtime_translator(model, run)` is the
model's translator (the padded-image contract of test.py's
any-size inference and tiling) with the network run by the runtime.

Inputs beyond the image are drawn as the torch path draws them: ATME's test-time discriminator map
`D_{t-1} = 0.5 + std * N(0, 1)` of shape (B, 1, h, w) (h, w the PatchGAN map size for H, W), SEGAN's latent
code (B, nz).
"""
import logging
from dataclasses import dataclass, field

import torch
from einops import reduce, repeat
from torch import nn

from models.atme.pool import test_time_maps
from models.networks.discriminators import patch_output_size
from models.networks.generators import generator_size_rule
from util.process.distributed import unwrap

log = logging.getLogger(__name__)

IMAGE_RANGE = [-1.0, 1.0]


@dataclass
class TensorSpec:
    name: str
    layout: str  # axis names, e.g. "B,C,H,W"
    channels: int
    value_range: list
    description: str

    def as_json(self):
        return {"name": self.name, "layout": self.layout, "channels": self.channels, "dtype": "float32",
                "value_range": self.value_range, "description": self.description}


@dataclass
class GraphSpec:
    """What an exported generator graph takes and gives (see the module docstring)."""
    family: str
    module: nn.Module
    inputs: list
    outputs: list
    size_multiple: int
    min_size: int
    size_description: str
    extra: dict = field(default_factory=dict)  # family-specific facts for the JSON (e.g. the D-map size rule)
    make_extra_inputs: object = None  # (batch, height, width, generator) -> {name: tensor} beyond the image

    def example_inputs(self, batch, height, width, seed=0):
        """Inputs of the given size: a random image in [-1, 1] and the extra inputs drawn as at test time."""
        generator = torch.Generator().manual_seed(seed)
        image = torch.rand(batch, self.inputs[0].channels, height, width, generator=generator) * 2 - 1
        feeds = {"image": image}
        if self.make_extra_inputs is not None:
            feeds.update(self.make_extra_inputs(batch, height, width, generator))
        return feeds


class AtmeGraph(nn.Module):
    """ATME at test time: W = W(D_{t-1}), x_t = x (1 + W), t = mean(W), output = G(x_t, t); returns (output, W)."""

    def __init__(self, net_w, net_g):
        super().__init__()
        self.net_w, self.net_g = net_w, net_g

    def forward(self, image, disc_prev):
        w_map = self.net_w(disc_prev, image.shape[-2:])
        t = reduce(w_map.float(), "b c h w -> b", "mean")
        return self.net_g(image * (1 + w_map), t), w_map


class NoFeedbackGraph(nn.Module):
    """ATME's --no_feedback ablation: output = G(x, t = 0)."""

    def __init__(self, net_g):
        super().__init__()
        self.net_g = net_g

    def forward(self, image):
        return self.net_g(image, image.new_zeros(image.shape[0], dtype=torch.float32))


class GeneratorGraph(nn.Module):
    """pix2pix: output = G(image)."""

    def __init__(self, net_g):
        super().__init__()
        self.net_g = net_g

    def forward(self, image):
        return self.net_g(image)


class CodeGeneratorGraph(GeneratorGraph):
    """SEGAN: output = G(image, code)."""

    def forward(self, image, code):
        return self.net_g(image, code)


def image_input(channels):
    return TensorSpec("image", "B,C,H,W", channels, IMAGE_RANGE,
                      "the input image, padded to the size multiple; NCHW, float32")


def output_spec(channels):
    return TensorSpec("output", "B,C,H,W", channels, IMAGE_RANGE, "the translated image, same H and W (tanh)")


def mode_dependent_layers(module):
    """Names of the layers whose output differs between train and eval mode (dropout, batch norm)."""
    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    return sorted({type(m).__name__ for m in module.modules() if isinstance(m, kinds)})


def graph_spec(model):
    """The GraphSpec of `model`'s test-time network (a built pix2pix, ATME or SEGAN model with its weights)."""
    opt = model.opt
    family = opt.model
    net_g = unwrap(model.netG)
    if family == "atme":
        multiple = net_g.downsample_factor
        if not model.feedback:
            spec = GraphSpec(family, NoFeedbackGraph(net_g), [image_input(opt.input_nc)], [output_spec(opt.output_nc)],
                             multiple, multiple, f"ATME's U-Net with --dim_mults {','.join(map(str, opt.dim_mults))}")
            spec.extra = {"no_feedback": True}
            return spec
        # The smallest side the PatchGAN map (and W's quarter-size stage) allow, rounded up to the multiple.
        min_size = multiple
        while True:
            try:
                patch_output_size(opt.netD, opt.n_layers_D, min_size, min_size)
                break
            except ValueError:
                min_size += multiple
        min_size = max(min_size, -(-4 // multiple) * multiple)
        std = float(opt.pool_test_std)

        def maps(batch, height, width, generator):
            size = patch_output_size(opt.netD, opt.n_layers_D, height, width)
            return {"disc_prev": test_time_maps(batch, size, std=std, generator=generator)}

        example = patch_output_size(opt.netD, opt.n_layers_D, opt.crop_size, opt.crop_size)
        disc = TensorSpec("disc_prev", "B,1,h,w", 1, [0.0, 1.0],
                          f"D_(t-1), the discriminator's map of the previous epoch; at test time 0.5 + "
                          f"{std} * N(0, 1). (h, w) is the --netD {opt.netD} PatchGAN map size of the image: for "
                          f"{opt.crop_size}x{opt.crop_size}, {example[0]}x{example[1]}; with k = 4, p = 1 a side "
                          f"s goes s -> (s + 2 - 4) // 2 + 1 per stride-2 layer, then s -> s - 1 twice")
        w_out = TensorSpec("W", "B,1,H,W", 1, IMAGE_RANGE, "W(D_(t-1)); the generator's input was image * (1 + W)")
        spec = GraphSpec(family, AtmeGraph(unwrap(model.netW), net_g), [image_input(opt.input_nc), disc],
                         [output_spec(opt.output_nc), w_out], multiple, min_size,
                         f"ATME's U-Net with --dim_mults {','.join(map(str, opt.dim_mults))}", make_extra_inputs=maps)
        spec.extra = {"disc_prev_size": {"netD": opt.netD, "n_layers_D": opt.n_layers_D, "pool_test_std": std,
                                         "example": {"image": [opt.crop_size, opt.crop_size], "map": list(example)}}}
        return spec
    if family == "segan":
        stride = 2 ** net_g.num_downs
        nz = net_g.nz

        def codes(batch, height, width, generator):
            return {"code": torch.randn(batch, nz, generator=generator)}

        code = TensorSpec("code", "B,nz", nz, ["N(0, 1)"],
                          f"the latent code z, {nz} values per image drawn from N(0, I); test.py draws them with "
                          f"--sample_seed")
        return GraphSpec(family, CodeGeneratorGraph(net_g), [image_input(opt.input_nc), code], [output_spec(opt.output_nc)],
                         stride, stride, f"SEGAN's {net_g.num_downs}-level U-Net", make_extra_inputs=codes)
    rule = generator_size_rule(net_g) or (1, 1, f"--netG {opt.netG}")
    return GraphSpec(family, GeneratorGraph(net_g), [image_input(opt.input_nc)], [output_spec(opt.output_nc)],
                     rule[0], rule[1], rule[2])


def runtime_translator(model, run):
    """The model's translator (BaseModel.translator: a padded (B, C, H, W) image in [-1, 1] -> {visual name:
    tensor of the same H, W}) with the network run by `run`; test.py sets it as `model.runtime_translator`, so
    padding, tiling and the visuals are those of the torch path.

    ATME draws its test-time maps for the padded (or tile) size from the model's test generator, as its torch
    translator does; SEGAN runs every test-time code.
    """
    family = model.opt.model

    def translate(image):
        if family == "atme" and model.feedback:
            size = patch_output_size(model.opt.netD, model.opt.n_layers_D, *image.shape[-2:])
            model.disc_prev = test_time_maps(image.shape[0], size, std=model.opt.pool_test_std,
                                             generator=model.test_generator, device=image.device)
            outputs = run({"image": image, "disc_prev": model.disc_prev})
            return {"fake_B": outputs["output"], "W": outputs["W"], "noisy_A": image * (1 + outputs["W"])}
        if family == "segan":
            return {f"{model.sample_prefix}_{k}": run({"image": image,
                                                       "code": repeat(code, "nz -> b nz", b=image.shape[0])})["output"]
                    for k, code in enumerate(model.sample_codes)}
        return {"fake_B": run({"image": image})["output"]}

    return translate


def graph_input_names(model):
    if model.opt.model == "atme":
        return ("image", "disc_prev") if model.feedback else ("image",)
    if model.opt.model == "segan":
        return ("image", "code")
    return ("image",)


@torch.no_grad()
# ---------------------------------------------------------------------- the files of a run
def checkpoint_files(model, tag):
    """The network files `model.setup()` loads for checkpoint `tag` (the ones an export is made from)."""
    files = []
    for name, _ in model.networks():
        path = model._find_network_file(tag, name)
        if path is None:
            raise FileNotFoundError(f"no checkpoint of network {name} for '{tag}' in {model.save_dir}")
        files.append(model._readable(path))
    return files


def export_command(opt, tag):
    """The command that exports checkpoint `tag` of `opt`'s run."""
    epoch = f"--load_iter {opt.load_iter}" if str(tag).startswith("iter_") else f"--epoch {tag}"
    return f"python -m scripts.tools.export --checkpoints_dir {opt.checkpoints_dir} --name {opt.name} {epoch}"


def open_runtime(model, tag, backend, precision="fp32"):
    """The runner of `backend` for the exported graph of checkpoint `tag`, checked against the run's weights.

    Refused when the export is missing or stale (with the command that makes it), and when the generator has
    dropout or batch norm but the networks are in train mode (the graph is the eval-mode network).
    """
    from util.export.onnx_export import load_export
    from util.export.runtimes import open_runner
    command = export_command(model.opt, tag)
    path, _ = load_export(model.save_dir, tag, checkpoint_files(model, tag), command)
    changing = mode_dependent_layers(unwrap(model.netG))
    if changing and unwrap(model.netG).training:
        raise ValueError(f"the generator has {', '.join(changing)} layers, which act differently in train mode, and "
                         f"the exported graph is the eval-mode network; add --eval to compare like with like, or "
                         f"use --backend torch")
    return open_runner(path, backend, precision)


def fastest_backend(model, tag, side, calls=2):
    """(name, runner or None for torch): the fastest fp32 backend for `model` measured here, on one image of
    `side` x `side` pixels (after a warm-up call, the median of `calls` calls each, taking turns). fp32 only, so
    every choice gives torch's results to the export tolerance."""
    import statistics
    import time
    spec = graph_spec(model)
    side = max(spec.min_size, -(-side // spec.size_multiple) * spec.size_multiple)
    feeds = {k: v.to(model.device) for k, v in spec.example_inputs(1, side, side).items()}
    candidates = {"torch": None, "onnxruntime": open_runtime(model, tag, "onnxruntime"),
                  "openvino": open_runtime(model, tag, "openvino")}

    def call(runner):
        with torch.no_grad():
            return spec.module(*feeds.values()) if runner is None else runner(feeds)

    times = {name: [] for name in candidates}
    for name, runner in candidates.items():
        call(runner)  # warm-up: OpenVINO compiles for the shape, the others allocate
    for _ in range(calls):
        for name, runner in candidates.items():
            begin = time.perf_counter()
            call(runner)
            times[name].append(time.perf_counter() - begin)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = min(medians, key=medians.get)
    return best, candidates[best], medians


def open_backend(model, tag, backend, precision="fp32", side=256):
    """(runner or None for torch, the backend's name) for test.py's --backend; `auto` times the fp32 backends on
    one `side` x `side` image and takes the fastest."""
    if backend == "torch":
        return None, backend
    if backend != "auto":
        return open_runtime(model, tag, backend, precision), backend
    best, runner, medians = fastest_backend(model, tag, side)
    log.info("--backend auto: %s (seconds per %dx%d image: %s)", best, side, side,
             ", ".join(f"{name} {t:.3f}" for name, t in medians.items()))
    return runner, best
