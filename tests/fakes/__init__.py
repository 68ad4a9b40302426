"""Fakes of outside services that enforce the services' documented contracts."""
