// Package config holds vxsec's settings and the one set of names they go by:
// a flag of `vxsec daemon` (--data-port), an environment variable
// (VXSEC_DATA_PORT, what `docker plugin set` changes) and a config file key
// (data-port). Precedence is flag, then environment, then file, then default.
package config
