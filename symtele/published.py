"""The published numbers the report compares against (REFERENCE §1–§2, measured by running the seed's scripts).

These are targets, not results: notebooks and tests print them next to what the
experiments of :mod:`symtele.experiments` measure.
"""

#: REFERENCE §1: x² + 9y² from (8, −2), GD step 0.08, loss before each of 10 steps
QUADRATIC_GD = (100, 52.128, 33.2131, 22.7443, 15.9146, 11.2035, 7.9002, 5.5734, 3.9324, 2.7747)
#: the same with one SO(2) teleport before the step of epoch 4
QUADRATIC_SO2 = (100, 52.128, 33.2131, 22.7443, 15.9146, 3.08107, 0.596495, 0.115481, 0.0223570, 0.00432800)
#: after landing on the steepest point, each step multiplies the loss by (1 − 0.08·18)²
QUADRATIC_RATE = (1 - 0.08 * 18) ** 2

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
#: mean loss over the seeds at epoch 50
RELU_EPOCH50 = {"gd": 22.901, "gd+posscale": 1.884, "adagrad": 7.004, "adagrad+posscale": 1.376}
#: epochs for the mean curve to reach GD's final mean loss (1.9197)
RELU_EPOCHS_TO_GD_FINAL = {"gd": 299, "gd+posscale": 49, "adagrad": 162, "adagrad+posscale": 24}
#: wall-clock to reach it with the seed's code: 175 ms (GD) against 55 ms (GD + teleport)
RELU_WALL_CLOCK_MS = {"gd": 175, "gd+posscale": 55}
RELU_SPEEDUP = 3.2
