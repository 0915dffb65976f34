"""Inputs only, for running a trained generator: one folder of images, no targets.

The folder is `<dataroot>/<phase>/` when it exists (so `--phase test` works on a dataset root) and
`<dataroot>` itself otherwise. Images are read whole, not split: for an `A | B` folder use `aligned`.
"""
import os

from data.base_dataset import BaseDataset, check_crop_fits, get_params, get_transform
from data.image_folder import drop_bad_images, image_size, load_image, make_dataset


class SingleDataset(BaseDataset):
    """Samples with `A`, `A_paths` and `index`; `A` has `--input_nc` channels."""

    def __init__(self, opt):
        super().__init__(opt)
        phase_dir = os.path.join(opt.dataroot, opt.phase)
        self.dir_A = phase_dir if os.path.isdir(phase_dir) else opt.dataroot
        self.A_paths = make_dataset(self.dir_A, opt.max_dataset_size)
        if opt.skip_bad_images:
            self.A_paths = drop_bad_images(self.A_paths, self.dir_A)
        check_crop_fits(opt, image_size(self.A_paths[0]), self.A_paths[0])

    def __len__(self):
        return len(self.A_paths)

    def __getitem__(self, index):
        path = self.A_paths[index]
        img = load_image(path, "RGB")
        A = get_transform(self.opt, get_params(self.opt, img.size, path=path), grayscale=self.opt.input_nc == 1)(img)
        return {"A": A, "A_paths": path, "index": index}
