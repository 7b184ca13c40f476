"""Local servers and simulators for offline mode and tests. Product code reaches them only through the sprint's ``offline`` module."""
