package config

import (
	"errors"
	"fmt"
	"os"

	"github.com/joho/godotenv"
)

// DotEnv is the file LoadDotEnv reads, in the working directory.
const DotEnv = ".env"

// LoadDotEnv loads path into the process environment if the file exists,
// without overriding variables that are already set: the real environment
// wins, so a deployment can override a checked-out .env.
func LoadDotEnv(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := godotenv.Load(path); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// DirectURL is where work that needs a session of its own connects:
// migrations (they hold a session-level advisory lock) and the realtime
// listener (LISTEN lasts as long as its session), neither of which a
// transaction-mode pooler keeps. It is DATABASE_DIRECT_URL when set, else
// databaseURL, the URL the pool uses.
func (c Config) DirectURL(databaseURL string) string {
	if c.DatabaseDirectURL != "" {
		return c.DatabaseDirectURL
	}
	return databaseURL
}
