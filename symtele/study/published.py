"""The published numbers the report compares against, each defined once (REFERENCE §1–§2).

They were measured by running the course project's scripts. They are targets, not results:
the notebooks, the claims table and the reproduction tests print or test them next to what
the experiments of :mod:`symtele.study.experiments` measure.
"""

from .settings import CONVEX


def tolerance(printed: str) -> float:
    """Half a unit in the last digit of a number as printed: how far a value may be and still print so.

    Args:
        printed: the number as the writeup prints it.

    Returns:
        ``0.5 · 10^−decimals``.
    """
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0**-decimals


#: REFERENCE §1: x² + 9y² from (8, −2), GD step 0.08, loss before each of 10 steps, as printed
QUADRATIC_GD_PRINTED = tuple("100 52.128 33.2131 22.7443 15.9146 11.2035 7.9002 5.5734 3.9324 2.7747".split())
#: the same with one SO(2) teleport before the step of epoch 4
QUADRATIC_SO2_PRINTED = tuple(
    "100 52.128 33.2131 22.7443 15.9146 3.08107 0.596495 0.115481 0.0223570 0.00432800".split()
)
QUADRATIC_GD = tuple(float(v) for v in QUADRATIC_GD_PRINTED)
QUADRATIC_SO2 = tuple(float(v) for v in QUADRATIC_SO2_PRINTED)
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

#: The original code of Zhao et al. (Rose-STL-Lab/Symmetry-Teleportation at db19814,
#: ``multi_layer_regression.py``), run unmodified here (torch 2.13.0, CPU, float32) on the LeakyReLU(0.1)
#: version of the course project's task: final loss (epoch 299) per seed, GD (step 1e-4) and AdaGrad
#: (step 1e-1), without and with its GL(n) teleport before the step of epoch 5 (GD: 1e-7 × 8 steps,
#: AdaGrad: 1e-5 × 2 steps), as the original prints them (four decimals are the report's).
GLN_FINAL = {
    "gd": (2.3874, 2.1658, 1.7531, 2.0329, 1.3199),
    "gd+gln": (2.4897, 1.5692, 1.4607, 1.4001, 0.9876),
    "adagrad": (1.3675, 1.2643, 1.5576, 1.3324, 1.4452),
    "adagrad+gln": (1.0589, 0.9817, 1.1744, 1.0588, 1.9689),
}
#: the same runs' loss right after the teleport (the loss of epoch 5)
GLN_AFTER_TELEPORT = {
    "gd+gln": (364.8943, 90.5885, 334.5866, 347.2754, 51.8505),
    "adagrad+gln": (26.5749, 46.1338, 33.8033, 58.6765, 3.3952),
}
#: How far the original's own results move under rounding-level changes of its arithmetic (σ⁻¹ as
#: h/0.1 instead of LeakyReLU(10); the loss as a sum of squares instead of a squared norm), measured
#: here on the same runs: the final losses by up to 1.0e-3, the loss right after the teleport by up to
#: 5.5e-5 of itself. Its GL(n) steps amplify rounding, so float32 results agree no closer than this.
GLN_ROUNDING = {"final": 1.0e-3, "after_teleport_relative": 5.5e-5}

#: writeup Fig. 6, Rosenbrock from (−1, −1), GD with Armijo steps: the loss at some of the curve's vertices,
#: read from the figure's vector paths and calibrated on its tick marks
ROSENBROCK_FIGURE_GD = {
    0: 404.03,
    102: 0.048433,
    197: 0.032218,
    303: 0.022693,
    414: 0.01558,
    496: 0.011007,
    604: 0.0073938,
    698: 0.0045159,
    798: 0.0025452,
    900: 0.0010985,
    1000: 0.00016379,
}
#: how closely values read off the figure can be trusted, relative: its calibration puts every vertex
#: about 1e-4 high, so a run that is the figure's curve agrees to within a few 1e-4
ROSENBROCK_FIGURE_READING = 5e-4
#: the same figure's teleported run: the loss right before (epoch 49) and right after each teleport,
#: and the epoch at which its curve ends, below 1e-8 (8.8e-9)
ROSENBROCK_FIGURE_TELEPORTS = {50: (0.22792, 0.24504), 250: (0.0043676, 0.0044296)}
ROSENBROCK_FIGURE_END = 393
