"""Service objects behind the routes: files, jobs, models, maintenance."""
