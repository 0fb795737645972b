"""The lab as people use it: Lab and config, recall agent, client emulators, scenarios, CLI, pytest plugin."""
