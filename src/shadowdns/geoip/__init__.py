"""Client address to region: ECS or source address, MaxMind DB, CIDR maps, nearest location."""
