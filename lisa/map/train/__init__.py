"""``lisa map train``: options, sampling, the loop, the run folder and resume."""
