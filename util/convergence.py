"""What the per-epoch convergence record measures, and the value it takes at the GAN's equilibrium.

`-L_GAN = D_real + D_fake` is the sum of the discriminator's two losses, averaged over an epoch. For the
vanilla (binary cross-entropy) game it tends to `log 4` when the generator's distribution equals the data's
and D outputs 1/2 everywhere (ATME paper, Theorem 1).
"""
import math

LOG4 = math.log(4.0)
