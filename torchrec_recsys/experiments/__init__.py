"""Experiment drivers (e.g. the semantic-ID ablation): they may import anything; nothing in
the package imports them except the ``cli`` dispatcher."""
