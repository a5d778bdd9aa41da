package gossip

import (
	"log"
	"log/slog"
	"strings"

	"github.com/vxsec/vxsec/internal/limit"
)

// memberlistLogger carries serf's and memberlist's "[LEVEL] text" lines
// into slog at their level, every line within the log budget: memberlist
// logs, among others, each packet and stream that fails, which strangers
// choose.
type memberlistLogger struct{ lim *limit.Logger }

func (l *memberlistLogger) std() *log.Logger { return log.New(l, "", 0) }

func (l *memberlistLogger) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	// serf's INFO lines are chatty; they are debug detail for vxsec.
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	l.lim.Log(level, logKind(line), line)
	return len(p), nil
}

// logKind is the kind of a memberlist or serf line for the log budget:
// its level and the fixed text before the first variable part.
func logKind(line string) string {
	const variable = ":=(0123456789"
	end := len(line)
	if i := strings.IndexAny(line, variable); i >= 0 {
		end = i
		// The level tag and component ("[ERR] memberlist:") come first.
		if line[i] == ':' {
			if j := strings.IndexAny(line[i+1:], variable); j >= 0 {
				end = i + 1 + j
			} else {
				end = len(line)
			}
		}
	}
	return line[:min(end, 80)]
}
