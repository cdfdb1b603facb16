"""recsys: slate recommendation against simulated users (RecSim NG and a native torch twin).

Built in issue 6 on top of core_rl; this package is installed by the one `deeprl-suite` distribution.
"""
