"""Grader runtimes: profiles, pinned virtual environments, and the sandbox that runs a submission."""
