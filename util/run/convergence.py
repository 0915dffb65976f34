"""The per-epoch convergence record of a GAN run (`convergence.csv`): what it measures for each `--gan_mode`
and the value that quantity takes at the game's equilibrium.

Every record holds the epoch means of the discriminator's two losses, `D_real` (on real pairs) and `D_fake`
(on generated ones). What their sum means depends on the game:

- `vanilla` (binary cross-entropy): `-L_GAN = D_real + D_fake`. At the equilibrium the generator's
  distribution equals the data's, the optimal D outputs 1/2 everywhere and each term is `-log(1/2)`, so
  `-L_GAN = log 4` (ATME paper, Theorem 1).
- `lsgan` (least squares, labels 1 for real and 0 for fake): for a fixed G the optimal D is
  `D*(x) = p_data(x) / (p_data(x) + p_g(x))`, which is 1/2 when `p_g = p_data`; then
  `D_real = (1/2 - 1)^2 = 1/4` and `D_fake = (1/2)^2 = 1/4`, so `-L_GAN = 1/2`.
- `wgangp` (Wasserstein critic): `D_real = -E[D(real)]`, `D_fake = E[D(fake)]`; `-(D_real + D_fake)` is the
  critic's estimate of the Wasserstein-1 distance between the data and the generator. It has no fixed value
  to approach (the critic is only defined up to its Lipschitz bound), so no equilibrium line is drawn.
"""
import math
from collections import OrderedDict, namedtuple

LOG4 = math.log(4.0)

# column: the CSV column that holds the quantity; label: how plots and logs name it; equilibrium: its value at
# the equilibrium (None: no line); equilibrium_label: how the line is named; distance_column: the CSV column
# with quantity - equilibrium (None without an equilibrium).
Quantity = namedtuple("Quantity", "column label equilibrium equilibrium_label distance_column")

QUANTITIES = {
    "vanilla": Quantity("neg_L_GAN", "-L_GAN = D_real + D_fake", LOG4, "log 4 = 1.386", "neg_L_GAN_minus_log4"),
    "lsgan": Quantity("neg_L_GAN", "-L_GAN = D_real + D_fake (least squares)", 0.5, "1/2 (least squares)",
                      "neg_L_GAN_minus_half"),
    "wgangp": Quantity("wasserstein_estimate", "critic's Wasserstein estimate = -(D_real + D_fake)", None, None,
                       None),
}


def quantity(gan_mode):
    """The `Quantity` a run of `gan_mode` records per epoch."""
    if gan_mode not in QUANTITIES:
        raise ValueError(f"no convergence quantity for --gan_mode {gan_mode!r}; known: {', '.join(QUANTITIES)}")
    return QUANTITIES[gan_mode]


def record(gan_mode, d_real, d_fake):
    """The convergence.csv row (without the epoch) for the epoch means `d_real` and `d_fake`."""
    q = quantity(gan_mode)
    row = OrderedDict(D_real=d_real, D_fake=d_fake)
    if gan_mode == "wgangp":
        row[q.column] = -(d_real + d_fake)
    else:
        row[q.column] = d_real + d_fake
        row[q.distance_column] = d_real + d_fake - q.equilibrium
    return row


def mode_of_columns(columns):
    """The GAN mode a convergence.csv was written for, from its columns (older logs: vanilla)."""
    for mode, q in QUANTITIES.items():
        if q.distance_column and q.distance_column in columns:
            return mode
    if QUANTITIES["wgangp"].column in columns:
        return "wgangp"
    return "vanilla"
