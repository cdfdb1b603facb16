"""The discrete Q-learning family of the notes (9/12, 9/14): fitted Q iteration, online Q-learning,
DQN with its fixes (replay, target networks, double Q, N-step returns, dueling, prioritized replay)."""
