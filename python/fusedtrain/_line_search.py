"""The strong-Wolfe line search of the full-batch methods, on the scalar function phi(t).

Scalar logic only: the caller's ``phi(t, live)`` moves the params to ``x + t d``, evaluates the
closure and returns ``(f, g, g'd)``, where ``g`` is an opaque handle of that point's gradient
(our own buffer, or a flat array in the reference). ``live`` lists the handles the search still
holds, so the caller may reuse any other buffer for the new gradient.

Note [torch line search]: the algorithm is the one torch.optim.LBFGS runs for
``line_search_fn="strong_wolfe"``: bracketing by cubic extrapolation from the
initial step, then zoom by cubic interpolation with a safeguard that moves a trial 10% of the
bracket away from its ends after two insufficient-progress steps. Every branch and counter
follows it, so the same closure gives the same trial points and the same number of
evaluations. Nocedal & Wright, Numerical Optimization, Algorithms 3.5-3.6 and eq. (3.59).
"""
import math

import numpy as np


def cubic_minimizer(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clipped to
    ``bounds`` (default: the interval between the points); the middle of the bounds when the
    cubic has no minimizer. Nocedal & Wright eq. (3.59)."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    # The slopes may be float32 scalars (Note [torch scalar precision]); the arithmetic then
    # stays float32 as in torch. Degenerate data (equal points, a zero denominator) give the
    # middle of the bounds instead of torch's inf / NaN.
    with np.errstate(all="ignore"):
        try:
            d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
            disc = d1 * d1 - g1 * g2
            if not disc >= 0:
                return (lo + hi) / 2.0
            d2 = np.sqrt(disc) if isinstance(disc, np.floating) else math.sqrt(disc)
            # Written from the right-hand point, whichever it is.
            if x1 <= x2:
                m = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
            else:
                m = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        except ZeroDivisionError:
            return (lo + hi) / 2.0
    if not math.isfinite(m):
        return (lo + hi) / 2.0
    return min(max(m, lo), hi)


def strong_wolfe(phi, t, f, g, gtd, d_norm, *, c1=1e-4, c2=0.9, tolerance_change=1e-9,
                 max_ls=25):
    """A step t along d with ``f(x + t d) <= f + c1 t g'd`` (sufficient decrease) and
    ``|g(x + t d)'d| <= c2 |g'd|`` (curvature), the strong Wolfe conditions.

    ``f, g, gtd``: value, gradient handle and directional derivative at t = 0 (gtd < 0);
    ``d_norm``: max |d|, which turns a bracket width into a param change for
    ``tolerance_change``. Evaluates phi at most ``max_ls`` times. Returns
    ``(f_t, g_t, t, evaluations)`` for the best point found.
    """
    f_new, g_new, gtd_new = phi(t, (g,))
    evals = 1
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    it = 0
    br = bf = bg = bgtd = None
    # Bracketing: grow the step until an interval is known to hold a Wolfe point.
    while it < max_ls:
        if f_new > f + c1 * t * gtd or (it > 1 and f_new >= f_prev):
            br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            br, bf, bg, bgtd = [t], [f_new], [g_new], [gtd_new]
            done = True
            break
        if gtd_new >= 0:
            br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        t_next = cubic_minimizer(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                 bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new, gtd_new = phi(t, (g, g_prev))
        evals += 1
        it += 1
    if it == max_ls:
        br, bf, bg = [0.0, t], [f, f_new], [g, g_new]

    # Zoom: shrink the bracket by safeguarded cubic interpolation.
    insufficient = False
    low, high = (0, 1) if bf[0] <= bf[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(br[1] - br[0]) * d_norm < tolerance_change:
            break
        t = cubic_minimizer(br[0], bf[0], bgtd[0], br[1], bf[1], bgtd[1])
        top, bottom = max(br), min(br)
        margin = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < margin:
            if insufficient or t >= top or t <= bottom:
                t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new, gtd_new = phi(t, tuple(bg))
        evals += 1
        it += 1
        if f_new > f + c1 * t * gtd or f_new >= bf[low]:
            br[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (br[high] - br[low]) >= 0:
                br[high], bf[high], bg[high], bgtd[high] = br[low], bf[low], bg[low], bgtd[low]
            br[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
    return bf[low], bg[low], br[low], evals
