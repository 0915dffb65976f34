"""Inputs only, for running a trained generator: one folder of images, no targets.

The folder is `<dataroot>/<phase>/` when it exists (so `--phase test` works on a dataset root) and
`<dataroot>` itself otherwise. Images are read whole, not split: for an `A | B` folder use `aligned`.
"""
import os

from data.base_dataset import BaseDataset, get_params, get_transform
from data.image_folder import load_image, make_dataset


class SingleDataset(BaseDataset):
    """Samples with `A`, `A_paths` and `index`; `A` has `--input_nc` channels."""

    def __init__(self, opt):
        super().__init__(opt)
        phase_dir = os.path.join(opt.dataroot, opt.phase)
        self.dir_A = phase_dir if os.path.isdir(phase_dir) else opt.dataroot
        self.A_paths = self.checked_paths(make_dataset(self.dir_A, opt.max_dataset_size), self.dir_A, self.check_crop)

    def __len__(self):
        return len(self.A_paths)

    def __getitem__(self, index):
        path = self.A_paths[index]
        img = load_image(path)
        A = get_transform(self.opt, get_params(self.opt, img.size, path=path), grayscale=self.opt.input_nc == 1)(img)
        return {"A": A, "A_paths": path, "index": index}
