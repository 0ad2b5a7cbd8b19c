#!/usr/bin/env node
import "../dist/hook.js";
