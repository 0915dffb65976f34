"""Unpaired images: `<dataroot>/<phase>A/` and `<dataroot>/<phase>B/`, e.g. trainA and trainB."""
import os
import random

from data.base_dataset import BaseDataset, get_params, get_transform
from data.image_folder import load_image, make_dataset


class UnalignedDataset(BaseDataset):
    """A images in order, each with a B image drawn at random (in order with `--serial_batches`).

    The length is the larger of the two folders; `index` is the A index (modulo the A count). With
    `--direction BtoA` the folders swap roles: A comes from `<phase>B`.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.dir_A = os.path.join(opt.dataroot, opt.phase + "A")
        self.dir_B = os.path.join(opt.dataroot, opt.phase + "B")
        if self.swapped:
            self.dir_A, self.dir_B = self.dir_B, self.dir_A
        self.A_paths = self.checked_paths(make_dataset(self.dir_A, opt.max_dataset_size), self.dir_A, self.check_crop)
        self.B_paths = self.checked_paths(make_dataset(self.dir_B, opt.max_dataset_size), self.dir_B, self.check_crop)
        self.A_size, self.B_size = len(self.A_paths), len(self.B_paths)

    def __len__(self):
        return max(self.A_size, self.B_size)

    def __getitem__(self, index):
        index_A = index % self.A_size
        if self.opt.serial_batches:
            index_B = index % self.B_size
        else:  # a random partner, so fixed A-B pairs do not repeat every epoch
            index_B = random.randint(0, self.B_size - 1)
        A_path, B_path = self.A_paths[index_A], self.B_paths[index_B]
        A_img, B_img = load_image(A_path), load_image(B_path)
        # Unpaired: each side gets a crop and flip of its own.
        A = get_transform(self.opt, get_params(self.opt, A_img.size, path=A_path),
                          grayscale=self.opt.input_nc == 1)(A_img)
        B = get_transform(self.opt, get_params(self.opt, B_img.size, path=B_path),
                          grayscale=self.opt.output_nc == 1)(B_img)
        return {"A": A, "B": B, "A_paths": A_path, "B_paths": B_path, "index": index_A}
