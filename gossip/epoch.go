package gossip

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vxsec/vxsec/atomicfile"
)

// nextEpoch is the Epoch of this run's table versions: the clock's time,
// and in any case later than the last run's, which file keeps. A clock
// stepped back (a dead RTC, a bad NTP server) must not make a restarted
// host's tables older than the ones its peers hold: they would ignore
// every one of them until the clock caught up. No file (empty path) trusts
// the clock.
func nextEpoch(file string, now time.Time) (int64, error) {
	epoch := now.UnixNano()
	if file == "" {
		return epoch, nil
	}
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("reading the last table epoch: %w", err)
	default:
		last, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: not a table epoch (delete it to start again from the clock): %w", file, err)
		}
		if last >= epoch {
			epoch = last + 1
		}
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return 0, fmt.Errorf("keeping the table epoch: %w", err)
	}
	if err := atomicfile.Write(filepath.Dir(file), filepath.Base(file), []byte(strconv.FormatInt(epoch, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("keeping the table epoch: %w", err)
	}
	return epoch, nil
}
