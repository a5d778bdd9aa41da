// Command vxsec is the vxsec Docker network plugin and its tools.
package main
