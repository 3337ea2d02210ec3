"""Streamlit helpers shared by the dashboard's pages (the core package ``impartial`` never imports streamlit)."""
