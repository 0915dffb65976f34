"""The test-time graph of a generator alone (pix2pix): output = G(image)."""
from torch import nn

from util.export.graph_spec import GraphSpec, image_input, image_output


class GeneratorGraph(nn.Module):
    """output = G(image)."""

    def __init__(self, net_g):
        super().__init__()
        self.net_g = net_g

    def forward(self, image):
        return self.net_g(image)


def generator_graph_spec(net_g, size_rule, input_nc, output_nc):
    """The GraphSpec of `net_g` (unwrapped) alone, with the model's `size_rule`."""
    return GraphSpec(GeneratorGraph(net_g), [image_input(input_nc)], [image_output(output_nc)], size_rule)


def generator_translator(run):
    """The translator (x -> {"fake_B": G(x)}) with the graph run by `run` ({input: tensor} -> {output: tensor})."""
    return lambda x: {"fake_B": run({"image": x})["output"]}
