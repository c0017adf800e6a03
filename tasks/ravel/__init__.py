"""RAVEL (cities): recall a city's continent, country or language from stored knowledge."""
