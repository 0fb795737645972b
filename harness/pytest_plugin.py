"""pytest plugin of recall-lab (entry point pytest11): fixtures for a real mail lab in tests."""
