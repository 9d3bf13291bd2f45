-- A script that returns no definition.
return 42
