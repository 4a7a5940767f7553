"""Pure logic of the villa simulator: fleet master data, weather, power dynamics and the fleet model."""
