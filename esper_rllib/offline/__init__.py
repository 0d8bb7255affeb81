"""Offline critic studies: recorded rollouts (``record``), critics fitted on them
(``critic_fit``), and the decomposition of the critic's explained-variance gap."""
