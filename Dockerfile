# The managed plugin's rootfs: the static vxsec binary and nothing else.
# Builds offline: no base image is pulled. Run `make build` first.
FROM scratch
COPY bin/vxsec /vxsec
ENTRYPOINT ["/vxsec", "daemon"]
