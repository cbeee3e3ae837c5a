"""Admin UI (Flask): arrives with the "Admin UI" issue; talks to the management API only."""
