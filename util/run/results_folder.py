"""The folder of one test.py result: named after its inputs, written by one process at a time.

- `results_folder(...)`: `<results_dir>/<name>/<phase>_<tag>/` for a split of a data set (the run's own, or
  another laid out the same way), `<data folder's name>_<tag>/` for a folder of images, so testing your own
  photos never replaces the split's result.
- `inputs.json` in the folder records what its result was made from (the data folder's real path, the dataset
  mode, the phase); a later test of other inputs that would land there (two data folders of one name) is refused
  naming `--results_dir`, which chooses another place.
- `ResultsFolder`: the run folder's lock (util.run.run_folder: an exclusive `flock`, here on `.<folder>.lock`
  beside the folder, the owner described in `running.json` inside it while it writes), so a second test.py on the same folder is refused naming the first one's process and command,
  and no process removes another live one's staging folder.
"""
import json
import os
import re

from util.run import atomic
from util.run.run_folder import RunFolder, RunFolderError, describe_owner

INPUTS_FILE = "inputs.json"


class ResultsFolderError(RunFolderError):
    """The results folder cannot take this test's result; the message says why and which flag to change."""
    refusal = True  # util.command_line.cli: no traceback hint


def data_label(dataroot):
    """The data folder's name, made a plain path component (e.g. 'photos' for ~/photos/)."""
    name = os.path.basename(os.path.realpath(str(dataroot)).rstrip(os.sep)) or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "data"


def results_folder(results_dir, name, phase, tag, dataroot):
    """The result's folder under `<results_dir>/<name>`: `<phase>_<tag>` for a split of a data set (a data folder
    with a `<phase>` subfolder, as the run's own has), `<data folder's name>_<tag>` for a folder of images
    (e.g. `photos_latest` for ~/photos)."""
    split = os.path.isdir(os.path.join(str(dataroot), phase))
    return os.path.join(str(results_dir), name, f"{phase}_{tag}" if split else f"{data_label(dataroot)}_{tag}")


def inputs_of(dataroot, dataset_mode, phase):
    return {"dataroot": os.path.realpath(str(dataroot)), "dataset_mode": dataset_mode, "phase": phase}


def check_same_inputs(web_dir, inputs):
    """Refuse (ResultsFolderError) when `web_dir` holds the result of other inputs than `inputs`; a folder
    without `inputs.json` (new, or from an older version) takes any."""
    try:
        with open(os.path.join(web_dir, INPUTS_FILE)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return
    if {k: recorded.get(k) for k in inputs} != inputs:
        raise ResultsFolderError(
            f"{web_dir} holds the result of {recorded.get('dataroot')} (--dataset_mode {recorded.get('dataset_mode')}, "
            f"--phase {recorded.get('phase')}), and this test reads {inputs['dataroot']} (--dataset_mode "
            f"{inputs['dataset_mode']}, --phase {inputs['phase']}): a result replaces only a result of the same "
            f"inputs. Nothing was written. Put this one elsewhere with --results_dir DIR (e.g. --results_dir "
            f"./results_{data_label(inputs['dataroot'])})")


def record_inputs(web_dir, inputs):
    atomic.write_json(os.path.join(web_dir, INPUTS_FILE), inputs)


class ResultsFolder(RunFolder):
    """A results folder held by one test.py: `lock()` creates it and takes its lock, or raises
    ResultsFolderError naming the process that writes it. `release(failed=True)` also removes the folder when
    this lock created it and no result was written (a test refused on the way leaves nothing behind)."""

    @property
    def lock_path(self):
        """Beside the folder (`.<folder>.lock`), so the result folder holds only the result."""
        return os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.lock")

    def lock(self, argv=None):
        missing, folder = [], self.path
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        self._created = missing  # the folder and its parents this lock creates, innermost first
        super().lock(argv)

    def release(self, failed=False):
        super().release()
        if failed and getattr(self, "_created", None):
            try:
                os.remove(self.lock_path)
                for folder in self._created:
                    os.rmdir(folder)  # fails, and so keeps it, when anything else is in it
            except OSError:
                pass

    def _busy_error(self):
        return ResultsFolderError(
            f"{self.path} is being written by {describe_owner(self.path)}: one test.py per results folder, or "
            f"each would replace the other's images. Nothing was written. Wait for it to finish, or write "
            f"elsewhere with --results_dir DIR")
