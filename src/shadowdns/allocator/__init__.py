"""Turns forecasts, capacity, health and policy into generations of shadow allocations."""
