package registry

import "errors"

// Errors of the registry's writes.
var (
	ErrNotFound = errors.New("registry: not found")
	ErrExists   = errors.New("registry: already exists")
	ErrConflict = errors.New("registry: revision conflict")
	// ErrStatic refuses a write to a resource the config file declares (SetStatic, Source
	// config), and the storing of any resource with Source config: the registry never persists
	// them. Callers that let such writes through answer it as the config file owning the resource.
	ErrStatic = errors.New("registry: resource owned by the config file")
	// ErrInvalid refuses a resource the registry cannot hold: no ID, or not one of its types.
	ErrInvalid = errors.New("registry: invalid resource")
	// ErrStale is a Shared backend's refusal of a write staged over an index that misses another
	// node's commits: the registry catches up (Shared.Sync) and stages the write again, so its
	// callers never see it.
	ErrStale = errors.New("registry: another node wrote first")
)
