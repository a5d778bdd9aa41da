// Package atomicfile replaces files whole: write a temporary file, fsync
// it, rename it over the old one, fsync the directory. A crash leaves the
// old version or the new one, never half of either.
package atomicfile
