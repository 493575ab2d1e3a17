"""Every numerical tolerance used by the tests, with the reason for its size.

Keep them here so that a reader can audit them in one place.
"""

#: float64 unit roundoff.
EPS = 2.2e-16

#: Central finite differences with step h = 1e-6 on O(1) losses: truncation error
#: O(h^2 f''') ~ 1e-12 and rounding error O(eps / h) ~ 2e-10 per entry, relative to
#: gradients of size ~1e-2..1: 1e-6 relative on the whole gradient is a safe bound.
FD_STEP = 1e-6
FD_RTOL = 1e-6

#: Exact identities (Eq. 8, TP = BP with orthogonal W, ITP = GAIT in linear networks)
#: are equal up to rounding amplified by a few matrix products and solves with
#: well-conditioned (orthogonal or near-orthogonal) weights: 1e-10 leaves a margin of 1e4.
IDENTITY_RTOL = 1e-10

#: GAIT vs BP with orthogonal weights differs by O(gamma) (kinks of the leaky ReLU
#: crossed by the increments and second-order terms): cosine >= 1 - O(gamma).
GAIT_BP_COSINE = 0.9999

#: Precision test (8 hidden layers, width 100, gamma 1e-4): the required cosine of the issue.
DEEP_GAIT_BP_COSINE = 0.999

#: Agreement between the scaled-deviation targets and a literal transcription of
#: Alg. 1 where the literal one is still accurate (3 hidden layers, gamma 1e-2):
#: the literal deviations t - y carry an absolute rounding error ~eps |y| ~ 1e-16
#: on deviations of size gamma^(L-l) >= 1e-6, i.e. relative error <= 1e-9.
LITERAL_RTOL = 1e-8

#: Adam against a hand-computed step: a handful of flops per entry.
ADAM_RTOL = 1e-12
