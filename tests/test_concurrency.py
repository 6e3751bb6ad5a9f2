"""Python threads calling kernels at once, while another thread changes the thread count: no hang,
and every result bitwise equal to the same calls made one after another on one thread.

The calls run in a child process with a timeout, so a deadlock fails the test instead of hanging
the suite."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    import fusedtrain as ft

    WORKERS, STEPS = 3, 60
    SHAPES = [(2 ** 17 + 5,), (3001,), (1, 70001)]

    def problem(seed):
        rng = np.random.default_rng(seed)
        p = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(4)]
        x = rng.standard_normal((8, 6, 1500)).astype(np.float32)
        return p, grads, x

    def run(seed):
        # Adam steps, a global norm and a batch-norm forward per step: every parallel_for user.
        p, grads, x = problem(seed)
        m = [np.zeros_like(a) for a in p]
        v = [np.zeros_like(a) for a in p]
        rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
        norms = []
        for k in range(1, STEPS + 1):
            g = grads[k % 4]
            norms.append(ft.global_norm(g))
            ft.adam_(p, g, m, v, step=k, lr=1e-3)
            y, _, _ = ft.batch_norm_forward(x, None, None, rm, rv, training=True)
        return [a.tobytes() for a in p + m + v + [rm, rv, y]], norms

    ft.set_num_threads(1)
    expected = [run(seed) for seed in range(WORKERS)]

    got = [None] * WORKERS
    def worker(i):
        got[i] = run(i)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    toggles = 0
    while any(t.is_alive() for t in threads):
        ft.set_num_threads(1 + toggles % 3)
        toggles += 1
    for t in threads:
        t.join()
    for i in range(WORKERS):
        assert got[i][1] == expected[i][1], f"worker {i}: global_norm differs"
        for j, (a, b) in enumerate(zip(got[i][0], expected[i][0])):
            assert a == b, f"worker {i}: array #{j} differs from the single-threaded run"
    print("ok", toggles)
""")


def test_threads_stepping_while_thread_count_changes():
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("kernels called from several threads while set_num_threads "
                             "changes the count hung (no result in 60 s)") from None
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok"), out.stdout
    assert int(out.stdout.split()[1]) > 10, "set_num_threads barely ran while the workers did"
