"""Q-learning with continuous actions (notes 9/14): train a maximizer (DDPG, TD3, SAC), use an easily
maximizable Q-function (NAF), or sample actions (QT-Opt)."""
