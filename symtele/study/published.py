"""The published numbers the report compares against, each defined once (REFERENCE §1–§2).

They were measured by running the course project's scripts. They are targets, not results:
the notebooks, the claims table and the reproduction tests print or test them next to what
the experiments of :mod:`symtele.study.experiments` measure.
"""

from .settings import CONVEX

#: REFERENCE §1: x² + 9y² from (8, −2), GD step 0.08, loss before each of 10 steps
QUADRATIC_GD = (100, 52.128, 33.2131, 22.7443, 15.9146, 11.2035, 7.9002, 5.5734, 3.9324, 2.7747)
#: the same with one SO(2) teleport before the step of epoch 4
QUADRATIC_SO2 = (100, 52.128, 33.2131, 22.7443, 15.9146, 3.08107, 0.596495, 0.115481, 0.0223570, 0.00432800)
#: the largest curvature of x² + 9y² (twice 9): at the steepest point all of the loss is along y
QUADRATIC_CURVATURE = 18
#: after landing on the steepest point, each step multiplies the loss by (1 − lr·18)²
QUADRATIC_RATE = (1 - CONVEX.lr * QUADRATIC_CURVATURE) ** 2

#: REFERENCE §2: final loss (epoch 299) per seed n²·12345, n = 0…4, and mean ± std over them
RELU_FINAL = {
    "gd": (2.3368, 2.1128, 1.7473, 2.1046, 1.2967),
    "gd+posscale": (1.3999, 1.0025, 1.2858, 1.3605, 0.9173),
    "adagrad": (1.3561, 1.2590, 1.5574, 1.3472, 1.4276),
    "adagrad+posscale": (1.2551, 0.9431, 1.0511, 1.0849, 0.6893),
}
RELU_FINAL_MEAN_STD = {
    "gd": (1.9197, 0.3642),
    "gd+posscale": (1.1932, 0.1958),
    "adagrad": (1.3895, 0.0996),
    "adagrad+posscale": (1.0047, 0.1869),
}
#: the epoch at which REFERENCE §2 quotes the mean loss over the seeds, and those means
RELU_MEAN_EPOCH = 50
RELU_EPOCH_MEAN = {"gd": 22.901, "gd+posscale": 1.884, "adagrad": 7.004, "adagrad+posscale": 1.376}
#: epochs for the mean curve to reach GD's final mean loss (1.9197)
RELU_EPOCHS_TO_GD_FINAL = {"gd": 299, "gd+posscale": 49, "adagrad": 162, "adagrad+posscale": 24}
#: wall-clock to reach it with the course project's code: 175 ms (GD) against 55 ms (GD + teleport)
RELU_WALL_CLOCK_MS = {"gd": 175, "gd+posscale": 55}
RELU_SPEEDUP = 3.2

#: REFERENCE §2: a 10-step teleport of this network costs this many gradient evaluations
COST_DIMS = (256, 784, 512, 512, 10)
COST_GRAD_EVALS = {"posscale": 2.5, "posscale-ref": 114}
