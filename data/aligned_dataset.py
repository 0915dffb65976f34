"""Paired images stored side by side: each file of `<dataroot>/<phase>/` is `A | B`.

Layout rule: the width must be even (the two halves split at width / 2). With `--preprocess
resize_and_crop` or `crop`, which assume square inputs as every pix2pix dataset has, the width must
also be twice the height; with `scale_width*` and `none`, halves of any aspect ratio are accepted.
Every file is checked against this rule and the crop when the dataset is built (`BaseDataset.checked_paths`).
"""
import os

from data.base_dataset import BaseDataset, check_crop_fits, get_params, get_transform
from data.image_folder import load_image, make_dataset

SQUARE_HALVES_PREPROCESS = ("resize_and_crop", "crop")


def check_pair_layout(path, size, preprocess):
    """Raise ValueError when an image of `size` (width, height) is not an `A | B` pair for `preprocess`."""
    w, h = size
    layout = ("an aligned dataset stores each pair as one image, A on the left half and B on the right "
              "(see datasets/combine_A_and_B.py)")
    if w % 2:
        raise ValueError(f"image {path} is {w}x{h} (width x height): its width is odd, so it cannot be split "
                         f"into two halves; {layout}")
    if preprocess in SQUARE_HALVES_PREPROCESS and w != 2 * h:
        raise ValueError(f"image {path} is {w}x{h} (width x height) but --preprocess {preprocess} needs the "
                         f"width to be twice the height (two square halves); {layout}. For other aspect "
                         f"ratios use --preprocess scale_width, scale_width_and_crop or none")


class AlignedDataset(BaseDataset):
    """Pairs from `<dataroot>/<phase>/`; A and B share one crop and flip."""

    def __init__(self, opt):
        super().__init__(opt)
        self.dir_AB = os.path.join(opt.dataroot, opt.phase)
        # Every file's layout and crop are checked now, so a bad one stops (or is skipped) before step one.
        self.AB_paths = self.checked_paths(make_dataset(self.dir_AB, opt.max_dataset_size), self.dir_AB,
                                           self.check_pair)
        # Channels of what the network reads (A) and writes (B), after the BtoA swap.
        self.input_nc, self.output_nc = opt.input_nc, opt.output_nc

    def check_pair(self, path, size):
        """Raise ValueError when an image of `size` is not a pair this dataset can split and crop."""
        check_pair_layout(path, size, self.opt.preprocess)
        check_crop_fits(self.opt, (size[0] // 2, size[1]), path)

    def __len__(self):
        return len(self.AB_paths)

    def __getitem__(self, index):
        path = self.AB_paths[index]
        AB = load_image(path)
        check_pair_layout(path, AB.size, self.opt.preprocess)
        w, h = AB.size
        left, right = AB.crop((0, 0, w // 2, h)), AB.crop((w // 2, 0, w, h))
        source, target = (right, left) if self.swapped else (left, right)
        params = get_params(self.opt, source.size, path=path)
        A = get_transform(self.opt, params, grayscale=self.input_nc == 1)(source)
        B = get_transform(self.opt, params, grayscale=self.output_nc == 1)(target)
        return {"A": A, "B": B, "A_paths": path, "B_paths": path, "index": index}
