"""Web: server-rendered pages, their forms, URL routes and context processors."""
