"""What an exported test-time graph takes and gives, for any model.

A model describes its test-time network with `model.export_graph()`, a `GraphSpec`: the module (eval mode, the
arithmetic of the model's translator), its inputs and outputs (`TensorSpec`: name, layout, channels, value range),
how the inputs beyond the image are drawn (ATME's discriminator map, SEGAN's code), its size rule
(`model.size_rule()`: the multiple the image sides are padded to and the least side) and facts for the JSON. The
exporter, the parity check and the runtime chooser read only this description.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

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
    """A model's test-time graph (see the module docstring). `size_rule` has `multiple`, `min_size` and
    `description` (models.inference.SizeRule); `make_extra_inputs(batch, height, width, generator)` gives
    {name: tensor} for every input after the image, drawn as at test time."""
    module: nn.Module
    inputs: list
    outputs: list
    size_rule: tuple
    extra: dict = field(default_factory=dict)  # model-specific facts for the JSON (e.g. ATME's D-map size rule)
    make_extra_inputs: object = None

    @property
    def input_names(self):
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self):
        return [spec.name for spec in self.outputs]

    def example_inputs(self, batch, height, width, seed=0):
        """Inputs of the given size: a random image in [-1, 1] and the extra inputs drawn as at test time."""
        generator = torch.Generator().manual_seed(seed)
        image = torch.rand(batch, self.inputs[0].channels, height, width, generator=generator) * 2 - 1
        feeds = {self.inputs[0].name: image}
        if self.make_extra_inputs is not None:
            feeds.update(self.make_extra_inputs(batch, height, width, generator))
        return feeds

    def torch_runner(self):
        """{input name: tensor} -> {output name: tensor} with the torch module: what a runtime stands in for."""
        @torch.no_grad()
        def run(feeds):
            outputs = self.module(*(feeds[name] for name in self.input_names))
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            return dict(zip(self.output_names, outputs))
        return run


def image_input(channels):
    return TensorSpec("image", "B,C,H,W", channels, IMAGE_RANGE,
                      "the input image, padded to the size multiple; NCHW, float32")


def image_output(channels):
    return TensorSpec("output", "B,C,H,W", channels, IMAGE_RANGE, "the translated image, same H and W (tanh)")


def mode_dependent_layers(module, in_train_mode=False):
    """Names of the layers whose output differs between train and eval mode (dropout, batch norm); with
    `in_train_mode`, only those now in train mode."""
    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    return sorted({type(m).__name__ for m in module.modules()
                   if isinstance(m, kinds) and (m.training or not in_train_mode)})
