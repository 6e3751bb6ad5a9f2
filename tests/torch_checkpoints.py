"""Stepping a torch optimizer over a gradient stream, and resuming one from its checkpoint."""
import copy

import torch


def run_steps(opt, params, grads):
    """One opt.step() per entry of grads (a list of per-param gradients), fresh .grad each time."""
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


def assert_checkpoint_resumes(ours, params, make, grads):
    """make(clones of params) loaded with ours' state_dict steps grads bit for bit as ours does:
    params and every state tensor."""
    clones = [p.detach().clone().requires_grad_() for p in params]
    again = make(clones)
    again.load_state_dict(copy.deepcopy(ours.state_dict()))
    run_steps(ours, params, grads)
    run_steps(again, clones, grads)
    for p, q in zip(params, clones):
        assert torch.equal(p, q)
        for key in ours.state[p]:
            assert torch.equal(ours.state[p][key], again.state[q][key]), key
