"""Triggers: what starts a run from outside (GitHub webhooks, GitHub Actions), and the paths that mean "retrain"."""
