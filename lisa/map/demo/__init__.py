"""``lisa map demo``: the tiny map detector trained on the synthetic town, judged on held-out drives."""
