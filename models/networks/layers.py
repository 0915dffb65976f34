"""Normalisation factories, weight initialisation and small helpers shared by the networks."""
import functools
import logging

import torch
from torch import nn
from torch.nn import init

logger = logging.getLogger(__name__)

NORM_TYPES = ("batch", "instance", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def get_norm_layer(norm_type="instance"):
    """Factory `norm_layer(num_features) -> nn.Module` for `batch | instance | none`.

    Instance norm has no affine parameters and no running statistics, as in pix2pix, so
    released instance-norm checkpoints carry no norm keys. `none` is `nn.Identity`, which
    accepts and ignores the channel count.
    """
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type == "none":
        return nn.Identity
    raise ValueError(f"unknown normalisation {norm_type!r} (--norm); choose one of: {', '.join(NORM_TYPES)}")


def _norm_class(norm_layer):
    """The class a norm factory builds, seen through any `functools.partial` wrapping."""
    while isinstance(norm_layer, functools.partial):
        norm_layer = norm_layer.func
    return norm_layer


def uses_bias(norm_layer):
    """Whether a conv followed by `norm_layer` needs its own bias.

    Batch norm's affine shift makes a conv bias redundant. pix2pix gives the conv a bias
    with instance norm (kept: released instance-norm weights have those bias keys). With no
    norm at all the conv is the only place a shift can live, so it gets a bias too (the
    pix2pix release drops it there, which leaves those layers without any offset).
    """
    cls = _norm_class(norm_layer)
    if not isinstance(cls, type):
        raise ValueError(f"norm_layer must be a norm class or a functools.partial of one, got {norm_layer!r}")
    return issubclass(cls, (nn.modules.instancenorm._InstanceNorm, nn.Identity))


def init_weights(net, init_type="normal", init_gain=0.02):
    """Initialise conv/linear weights by `init_type` (biases 0) and batch norm to N(1, gain), 0.

    Returns `net` so calls chain. Other modules (e.g. group norm, attention scales) keep the
    initialisation their constructors chose.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown initialisation {init_type!r} (--init_type); choose one of: {', '.join(INIT_TYPES)}")

    def init_module(module):
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.weight is not None:
            if init_type == "normal":
                init.normal_(module.weight, 0.0, init_gain)
            elif init_type == "xavier":
                init.xavier_normal_(module.weight, gain=init_gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                init.orthogonal_(module.weight, gain=init_gain)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            init.normal_(module.weight, 1.0, init_gain)
            init.zeros_(module.bias)

    with torch.no_grad():
        net.apply(init_module)
    logger.debug("initialised %s with %s (gain %g)", type(net).__name__, init_type, init_gain)
    return net


def count_parameters(net, trainable_only=False):
    """Number of scalar parameters in `net` (only those with requires_grad if `trainable_only`)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
