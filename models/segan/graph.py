"""SEGAN's test-time graph: output = G(image, code), with the latent code (B, nz) an input drawn from N(0, I).

`translator(run, codes, prefix)` is SEGAN's translator with the network call `run`: one output per test-time
code, `<prefix>_<k>`, the codes shared by every input and tile. The torch path passes the generator itself.
"""
import torch
from einops import repeat
from torch import nn

from util.export.graph_spec import GraphSpec, TensorSpec, image_input, image_output


class CodeGeneratorGraph(nn.Module):
    """output = G(image, code)."""

    def __init__(self, net_g):
        super().__init__()
        self.net_g = net_g

    def forward(self, image, code):
        return self.net_g(image, code)


def segan_graph_spec(net_g, size_rule, *, input_nc, output_nc):
    """The GraphSpec of SEGAN's generator `net_g` (unwrapped) with the model's size rule."""
    nz = net_g.nz

    def codes(batch, height, width, generator):
        return {"code": torch.randn(batch, nz, generator=generator)}

    code = TensorSpec("code", "B,nz", nz, ["N(0, 1)"],
                      f"the latent code z, {nz} values per image drawn from N(0, I); test.py draws them with "
                      f"--sample_seed")
    return GraphSpec(CodeGeneratorGraph(net_g), [image_input(input_nc), code], [image_output(output_nc)],
                     size_rule, make_extra_inputs=codes)


def translator(run, codes, prefix):
    """x -> {`<prefix>_<k>`: the output for code k}, with `run` ({"image", "code"} -> {"output"})."""
    def translate(x):
        return {f"{prefix}_{k}": run({"image": x, "code": repeat(code, "nz -> b nz", b=x.shape[0])})["output"]
                for k, code in enumerate(codes)}
    return translate
