"""ATME's test-time graph: W = W(D_{t-1}), x_t = x (1 + W), t = mean(W), output = G(x_t, t), one module with the
inputs `image` and `disc_prev` and the outputs `output` and `W` (with `--no_feedback`: output = G(x, t = 0)).

`disc_prev` is drawn as the torch path draws it at test time, 0.5 + std * N(0, 1) of the PatchGAN map size of
the (padded or tile) image; `translator(run, draw_map)` is ATME's translator with the graph run by a runtime.
"""
import torch
from einops import reduce
from torch import nn

from models.atme.pool import test_time_maps
from models.networks.discriminators import patch_output_size
from util.export.graph_spec import IMAGE_RANGE, GraphSpec, TensorSpec, image_input, image_output


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


def atme_graph_spec(net_w, net_g, size_rule, *, input_nc, output_nc, netD, n_layers_D, pool_test_std, crop_size):
    """The GraphSpec of ATME's networks (unwrapped; `net_w` None for --no_feedback) with the model's size rule."""
    if net_w is None:
        return GraphSpec(NoFeedbackGraph(net_g), [image_input(input_nc)], [image_output(output_nc)], size_rule,
                         extra={"no_feedback": True})
    std = float(pool_test_std)

    def maps(batch, height, width, generator):
        return {"disc_prev": test_time_maps(batch, patch_output_size(netD, n_layers_D, height, width), std=std,
                                            generator=generator)}

    example = patch_output_size(netD, n_layers_D, crop_size, crop_size)
    disc = TensorSpec("disc_prev", "B,1,h,w", 1, [0.0, 1.0],
                      f"D_(t-1), the discriminator's map of the previous epoch; at test time 0.5 + {std} * N(0, 1). "
                      f"(h, w) is the --netD {netD} PatchGAN map size of the image: for {crop_size}x{crop_size}, "
                      f"{example[0]}x{example[1]}; with k = 4, p = 1 a side s goes s -> (s + 2 - 4) // 2 + 1 per "
                      f"stride-2 layer, then s -> s - 1 twice")
    w_out = TensorSpec("W", "B,1,H,W", 1, IMAGE_RANGE, "W(D_(t-1)); the generator's input was image * (1 + W)")
    extra = {"disc_prev_size": {"netD": netD, "n_layers_D": n_layers_D, "pool_test_std": std,
                                "example": {"image": [crop_size, crop_size], "map": list(example)}}}
    return GraphSpec(AtmeGraph(net_w, net_g), [image_input(input_nc), disc], [image_output(output_nc), w_out],
                     size_rule, extra=extra, make_extra_inputs=maps)


def translator(run, draw_map=None):
    """ATME's translator (x -> fake_B, W, noisy_A) with the graph run by `run` ({input: tensor} -> {output:
    tensor}); `draw_map(x)` gives the test-time D_{t-1} for x's size (None: --no_feedback, fake_B only)."""
    def translate(x):
        if draw_map is None:
            return {"fake_B": run({"image": x})["output"]}
        outputs = run({"image": x, "disc_prev": draw_map(x)})
        return {"fake_B": outputs["output"], "W": outputs["W"], "noisy_A": x * (1 + outputs["W"])}
    return translate
