// Package testutil holds the helpers the packages' unit tests share.
package testutil
