package auth

import "time"

// SetOAuth2Clock replaces the clock s uses for token expiry and UnauthorizedGrace. Call it
// before s is used.
func SetOAuth2Clock(s *OAuth2, now func() time.Time) { s.now = now }
