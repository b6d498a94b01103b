"""Pure decisions of kvraft: placement, quorum tallies, the anti-entropy descent, sync and leader
plans, balancing, the forward-only version rule and the clock guard.

Everything here is a function of its inputs that returns data (outcomes, instructions, repairs):
no IO, no sockets, no threads started, no clock read, no logging needed. The callers in
:mod:`kvraft.node`, :mod:`kvraft.sync` and :mod:`kvraft.leader` do the IO and feed each answer in;
the unit tests feed the same objects by hand. (:class:`~kvraft.core.balance.Balancer` holds a
lock so several request threads can share it; it still reads no clock and does no IO.)
"""
