"""Template: how to add a dataset mode. Copy this file to `data/<mode>_dataset.py` and edit it.

The contract:
- File `data/<mode>_dataset.py` holds class `<Mode>Dataset(BaseDataset)` (the name matches the file
  case-insensitively without underscores: `my_pairs_dataset.py` -> `MyPairsDataset`); then
  `--dataset_mode <mode>` finds it. No registration anywhere else.
- `modify_commandline_options(parser, is_train)` adds the mode's flags inside an argument group of its
  own and may change defaults with `parser.set_defaults(...)`; it returns the parser.
- `__init__(opt)` calls `BaseDataset.__init__`, lists the files (`make_dataset` gives clear errors for a
  missing or empty folder) and passes them through `self.checked_paths(paths, folder, check_size)`, which
  checks every file before training (it opens, its size suits the layout and the crop) and honours
  `--skip_bad_images`; it also fails early on bad settings.
- Images are opened with `load_image(path)` only: it turns every encoding (16-bit, float, alpha, palette,
  CMYK, EXIF rotation) into 'RGB', 'L' or 'F' in [0, 1], and `get_transform(..., grayscale=nc == 1)`
  gives the channels the network side wants.
- `__getitem__(index)` returns a dict with `A` (C, H, W float tensor in [-1, 1]), `A_paths` (str),
  `index` (the int it was called with; ATME finds its pool entry with it) and, for paired or unpaired
  data, `B` and `B_paths`. `A` is the network input: honour `--direction BtoA` here.
- Randomness comes from Python's `random` (e.g. through `get_params`), which `--seed` controls.

This working example makes pairs from a folder of plain photos, `<dataroot>/<phase>/`: B is the photo
and A the same photo downscaled by `--template_factor` and scaled back up (a super-resolution task).
"""
import os

from PIL import Image

from data.base_dataset import BaseDataset, get_params, get_transform
from data.image_folder import load_image, make_dataset
from util.command_line.flags import DATA


class TemplateDataset(BaseDataset):
    """Blurred photo (A) -> photo (B) pairs made on the fly from `<dataroot>/<phase>/`."""

    @staticmethod
    def modify_commandline_options(parser, is_train):
        group = parser.add_argument_group("template dataset")
        group.add_argument("--template_factor", lifetime=DATA, type=int, default=4,
                           help="A is B downscaled by this factor and scaled back up")
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.factor = getattr(opt, "template_factor", 4)
        if self.factor < 1:
            raise ValueError(f"--template_factor must be at least 1, got {self.factor}")
        self.dir = os.path.join(opt.dataroot, opt.phase)
        self.paths = self.checked_paths(make_dataset(self.dir, opt.max_dataset_size), self.dir, self.check_crop)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        photo = load_image(path)
        w, h = photo.size
        small = photo.resize((max(1, w // self.factor), max(1, h // self.factor)), Image.Resampling.BOX)
        degraded = small.resize((w, h), Image.Resampling.BILINEAR)
        source, target = (photo, degraded) if self.swapped else (degraded, photo)
        params = get_params(self.opt, photo.size, path=path)  # one crop and flip for both sides
        A = get_transform(self.opt, params, grayscale=self.opt.input_nc == 1)(source)
        B = get_transform(self.opt, params, grayscale=self.opt.output_nc == 1)(target)
        return {"A": A, "B": B, "A_paths": path, "B_paths": path, "index": index}
