"""Demand time series and the forecasters that predict them."""
