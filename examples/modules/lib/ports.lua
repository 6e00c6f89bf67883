-- One place for the port plan: base ports well over one footprint (111 ports) apart.
return {
  main = 18789,
  rescue = 19789,
  lab = 21000,
}
